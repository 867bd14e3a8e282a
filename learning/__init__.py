"""Model-side code for labelloop: backbones, adapters, training loops, calibration and query policies."""
