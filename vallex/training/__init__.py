"""Training and fine-tuning VALL-E X: data preparation, the training forward, the trainer.

Nothing here is imported by inference code; see ``vallex/training/README.md`` for the step-by-step guide.
"""
