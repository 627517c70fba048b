"""The seed ranges of the tiny world's videos (a video is a pure function of its seed): far apart, so the forward
model's training, the adapter's training and the evaluation never share a video."""

FORWARD_SEEDS = 0
ADAPTER_SEEDS = 50_000_000
HELDOUT_SEEDS = 90_000_000
