"""markovformer: how transformers learn Markov chains."""

__version__ = "0.1.0"
