"""Baseline: a straightforward fine-tune of the same pretrained backbone in plain PyTorch.

What a practitioner writes in an afternoon: resize to 224, random flips, cross-entropy on the raw class
distribution, AdamW at 3e-4 for 10 epochs over the whole network, last epoch kept. It shares no training code with
mieruka (only the offline weight loading), so ``mieruka train`` can be compared against it on the same split.

    python bench/plain_finetune.py ../shared/data/magnetic-tile/manifest.csv

Prints, as its last line, one JSON object with test accuracy, balanced accuracy and wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from mieruka.models import _pretrained_state


class ManifestImages(Dataset):
    def __init__(self, rows: list[dict[str, str]], base: Path, classes: list[str], train: bool) -> None:
        self.rows, self.base, self.classes = rows, base, classes
        aug = [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()] if train else []
        self.tf = transforms.Compose(
            [transforms.Resize((224, 224)), *aug, transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        r = self.rows[i]
        img = Image.open(self.base / r["image"]).convert("RGB")
        return self.tf(img), self.classes.index(r["label"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    with open(args.manifest, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["label"] for r in rows})
    base = args.manifest.parent
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(_pretrained_state("tf_efficientnet_lite0", "imagenet"))
    model.reset_classifier(len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    train_dl = DataLoader(
        ManifestImages(split["train"], base, classes, True),
        batch_size=32,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    test_dl = DataLoader(ManifestImages(split["test"], base, classes, False), batch_size=64, num_workers=2)

    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: last loss {loss.item():.4f}", flush=True)
    train_s = time.perf_counter() - t0

    model.eval()
    preds, trues = [], []
    with torch.no_grad():
        for x, y in test_dl:
            preds.append(model(x).argmax(1))
            trues.append(y)
    p, t = torch.cat(preds).numpy(), torch.cat(trues).numpy()
    recalls = [float((p[t == k] == k).mean()) for k in range(len(classes)) if (t == k).any()]
    print(
        json.dumps(
            {
                "test_accuracy": round(float((p == t).mean()), 4),
                "test_balanced_accuracy": round(float(np.mean(recalls)), 4),
                "train_seconds": round(train_s, 1),
                "epochs": args.epochs,
            }
        )
    )


if __name__ == "__main__":
    main()
