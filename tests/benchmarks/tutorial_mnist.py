"""The PyTorch quickstart tutorial's loop (DataLoader + ToTensor), on MNIST files at ROOT:
the baseline that bench_train_speed.py measures the project against.

    python tests/benchmarks/tutorial_mnist.py ROOT [EPOCHS]
"""

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


def train_epoch(dataloader, model, loss_fn, optimizer):
    model.train()
    for X, y in dataloader:
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test(dataloader, model, loss_fn):
    model.eval()
    correct = 0
    with torch.no_grad():
        for X, y in dataloader:
            correct += (model(X).argmax(1) == y).type(torch.float).sum().item()
    return correct / len(dataloader.dataset)


def main(root, epochs=3):
    torch.manual_seed(0)
    training_data = datasets.MNIST(root=root, train=True, download=False, transform=ToTensor())
    test_data = datasets.MNIST(root=root, train=False, download=False, transform=ToTensor())
    train_dataloader = DataLoader(training_data, batch_size=64, shuffle=True)
    test_dataloader = DataLoader(test_data, batch_size=64)
    model = NeuralNetwork()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_epoch(train_dataloader, model, loss_fn, optimizer)
        times.append(time.perf_counter() - t0)
    return times, test(test_dataloader, model, loss_fn)


if __name__ == "__main__":
    times, acc = main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print(f"epoch times {[round(t, 2) for t in times]}  test_acc {acc:.4f}")
