"""Evaluation: MMSA metrics, the per-source evaluator and its gates, checkpoint scoring, framing."""
