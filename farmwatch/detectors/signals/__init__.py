"""The detectors, one signal per module; the machinery that runs them lives one level up."""
