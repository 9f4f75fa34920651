import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg():
    """A config dict for a seconds-long run on synthetic data."""
    return {"seed": 0,
            "data": {"name": "synthetic", "val_size": 64, "batch_size": 64, "eval_batch_size": 256},
            "model": {"name": "wong_mnist"},
            "method": {"name": "fgsm", "eps": 0.1},
            "optim": {"lr": 0.05},
            "train": {"epochs": 3, "progress": "none", "threads": 1},
            "monitor": {"eval_points": 128, "attack_steps": 3},
            "final_eval": {"points": 64, "steps": 3, "restarts": 2}}
