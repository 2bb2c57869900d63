"""Experiments of *Non-asymptotic Convergence of Training Transformers for Next-token Prediction*
(NTP), chapter 7."""
