"""The tiny world: a toy world of bouncing balls where the true motion is known, a small SVD-architecture model
trained on it (shipped in ``assets/tiny_world``), and the science check that runs every method on it.

``world`` draws the videos and finds the balls; ``recipe`` trains the model; ``science`` scores the methods;
``demo`` writes ``inbetween demo``'s comparison sheet.
"""
