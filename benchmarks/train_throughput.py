"""Training throughput: prunebook.train (tensors on the device) against a plain torchvision DataLoader loop.

    python benchmarks/train_throughput.py [--images 6000] [--device auto] [--workers 0 2]

Both paths train the same model with the same batch size, optimizer and augmentation for one pass over
the same images, and report images per second after a short warm-up:
- small CNN on Fashion-MNIST 1×28×28 (random crop, padding 2);
- ResNet-20 on 3×32×32 (random crop, padding 4, horizontal flip). CIFAR-10 is not offline, so the
  images are Fashion-MNIST padded to 32×32 and repeated over 3 channels: the cost per image is CIFAR's.
The DataLoader path is what torchvision's CIFAR10/FashionMNIST datasets do per item: a PIL image, then
the transforms, then collation. ``prunebook.train`` is shown as it runs by default (channels-last
memory format for image batches) and with that trick off ("contiguous"); ratios are against it as default.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from prunebook import config, data, models, train
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


class ArrayImages(Dataset):
    """uint8 images held as a NumPy array, served one PIL image at a time (as torchvision's CIFAR10 does)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return self.transform(img), int(self.labels[i])


def dataloader_images_per_s(model, ds, transform, batch_size, workers, device, warmup=5):
    images = (ds.x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    images = images[..., 0] if images.shape[-1] == 1 else images
    loader = DataLoader(ArrayImages(images, ds.y.numpy(), transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=False)
    opt = train.make_optimizer(model, "sgd", 0.05, 0.9, 5e-4)
    model.to(device).train()
    seen, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            t0, seen = time.perf_counter(), 0
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def prunebook_images_per_s(model, ds, batch_size, device, crop_padding, flip, channels_last, warmup=5):
    ds = ds.to(device)
    kwargs = dict(batch_size=batch_size, lr=0.05, crop_padding=crop_padding, flip=flip, device=device,
                  channels_last=channels_last, progress_bar=False)
    train.fit(model, ds.subset(torch.arange(warmup * batch_size)), epochs=1, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train.fit(model, ds, epochs=1, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(ds) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=6000, help="images per measured pass")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    args = parser.parse_args()
    device = config.pick_device(args.device)
    config.seed_everything(0)
    fashion = data.stratified_subset(data.fashion_mnist("train"), args.images, seed=0)
    mean, std = data.channel_stats(fashion)
    cases = [
        ("SmallCNN, Fashion-MNIST 1x28x28", lambda: models.SmallCNN(), fashion, 2, False,
         T.Compose([T.RandomCrop(28, padding=2), T.ToTensor(),
                    T.Normalize(mean.flatten().tolist(), std.flatten().tolist())])),
    ]
    rgb = data.pad_to(fashion, 32)
    rgb = data.ImageSet(rgb.x.repeat(1, 3, 1, 1), rgb.y, rgb.classes, "fashion-32x32x3")
    m3, s3 = data.channel_stats(rgb)
    cases.append(("ResNet-20, 3x32x32", lambda: models.resnet_cifar(20), rgb, 4, True,
                  T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize(m3.flatten().tolist(), s3.flatten().tolist())])))
    print(f"device: {device}, threads: {torch.get_num_threads()}, {args.images} images, batch {args.batch_size}")
    print(f"{'model':<34} {'loop':<22} {'images/s':>9} {'ratio':>6}")
    for name, make, ds, pad, flip, transform in cases:
        normalized, = data.standardize(ds)
        plain = prunebook_images_per_s(make(), normalized, args.batch_size, device, pad, flip, False)
        print(f"{name:<34} {'prunebook, contiguous':<22} {plain:>9.0f}")
        ours = prunebook_images_per_s(make(), normalized, args.batch_size, device, pad, flip, True)
        print(f"{name:<34} {'prunebook.train':<22} {ours:>9.0f}")
        for workers in args.workers:
            base = dataloader_images_per_s(make(), ds, transform, args.batch_size, workers, device)
            print(f"{name:<34} {f'DataLoader, {workers} workers':<22} {base:>9.0f} {ours / base:>5.2f}x")


if __name__ == "__main__":
    main()
