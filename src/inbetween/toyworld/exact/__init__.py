"""The exact-denoiser world."""
