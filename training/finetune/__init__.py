"""Fine-tuning on a user's own labelled texts: ``python -m training.finetune --data FILE --name NAME``."""
