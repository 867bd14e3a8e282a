"""The glue between database rows and the ML code (learning/, embeddings/):
training, calibration, inference/pre-labels, Pending, readiness, stats."""
