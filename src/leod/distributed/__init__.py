"""Work shared out over torch.distributed ranks (pseudo labelling and evaluation)."""
