"""A Lightning app of a user's own, searched by sweep_optuna with pruning (tests/test_dropin.py): a
linear regression on fixed data; its first two jobs learn at lr 0.1, later ones barely (lr 1e-4),
so the median pruner, once the first two have completed, stops the later ones after epoch 1. Each
job records its process id beside its results, to show where it ran."""

import os
from pathlib import Path

import hydra
import lightning
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep.search.lightning import PruningCallback


class Regression(lightning.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr, self.layer = lr, torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@hydra.main(config_path="lightning_conf", config_name="config")
def train(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    Path(hc.runtime.output_dir, "pid").write_text(str(os.getpid()))
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = torch.utils.data.TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    model = Regression(0.1 if hc.job.num < 2 else 1e-4)
    trainer = lightning.Trainer(max_epochs=cfg.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[PruningCallback(monitor="val_loss")])  # fmt: skip
    trainer.fit(model, loader, loader)
    return float(trainer.callback_metrics["val_loss"])


if __name__ == "__main__":
    train()
