"""The claims each chapter checks, as functions returning :class:`markovformer.claims.Claim`.

One module per chapter. A chapter's check cell calls the function with what the chapter already
computed (so nothing is computed twice) and prints the claims with
:func:`markovformer.notebook.check_claims`; ``markovformer claims`` calls the same functions with
nothing but the data root, and they compute what they need themselves. Importing this package
registers every function (:func:`markovformer.claims.claims_of`).
"""

from . import (  # noqa: F401
    ch1_markov,
    ch2_transformer,
    ch3_low_rank,
    ch4_landscape,
    ch5_initialisation,
    ch6_kernels,
    ch7_max_margin,
    ch9_plateau,
)

__all__: list[str] = []
