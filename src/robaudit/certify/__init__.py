"""Certified robustness by randomized smoothing (Cohen et al. 2019), with a diffusion model's one-shot denoiser in
front of the classifier (Carlini et al. 2023): the vote statistics (``bounds``) and the noise level a diffusion
schedule matches (``timestep``)."""
