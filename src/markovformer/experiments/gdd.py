"""Experiments of *Unraveling the Gradient Descent Dynamics of Transformers* (GDD), chapter 6."""
