"""The exact-denoiser world: samplers judged without a trained model.

``world`` enumerates every video of a small one-ball world (paths through an atlas of frames); ``denoisers`` gives
the closed-form posterior-mean denoisers of the paper's models in it (forward, fine-tuned backward, backward without
fine-tuning, unconditional) as the samplers' branch denoiser; ``study`` runs every sampler and preset through
``inbetween.sampling.sample`` and scores it against the ideal answers (``inbetween toyworld samplers``); ``config``
holds their settings (no torch: the CLI builds its flags from it). Results: docs/tiny_world/samplers.md.
"""
