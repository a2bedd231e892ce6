"""Data readers (real CIFAR-10 slice, fake CIFAR-100 / SVHN / STL-10 / Tiny-ImageNet files),
augmentation, splits and statistics of robustkernels.api.data."""

import pickle

import numpy as np
import pytest
import torch
from data_files import cifar10_subset, write_cifar_batch

from robustkernels.api import data

# The first labels of the official data_batch_1 and test_batch (the slice keeps their order).
CIFAR10_FIRST_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
CIFAR10_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


# ---------------------------------------------------------------- real CIFAR-10 slice


def test_cifar10_slice_reads_every_file():
    root = cifar10_subset()
    train_x, train_y = data.load_cifar10(root, "train")
    test_x, test_y = data.load_cifar10(root / "cifar-10-batches-py", "test")  # the folder itself works too
    assert train_x.shape == (4660, 3, 32, 32) and train_x.dtype == torch.uint8
    assert test_x.shape == (932, 3, 32, 32) and test_y.dtype == torch.int64
    assert train_y[:10].tolist() == CIFAR10_FIRST_TRAIN_LABELS
    assert test_y[:10].tolist() == CIFAR10_FIRST_TEST_LABELS
    assert set(train_y.tolist()) == set(range(10))


def test_cifar10_pixels_are_laid_out_as_images():
    images = data.load_cifar10(cifar10_subset(), "test")[0].float()
    # Real photos are smooth: neighbouring pixels differ far less than pixels a row apart in
    # the flat buffer would if the planes were mis-reshaped.
    neighbours = (images[..., 1:] - images[..., :-1]).abs().mean()
    far = (images[..., 16:] - images[..., :-16]).abs().mean()
    assert neighbours < 0.5 * far
    # Channel planes are distinct (not one plane repeated) but strongly correlated.
    red, blue = images[:, 0].flatten(), images[:, 2].flatten()
    assert not torch.equal(red, blue) and torch.corrcoef(torch.stack([red, blue]))[0, 1] > 0.7


def test_cifar10_statistics_and_split_on_the_slice():
    images, labels = data.load_cifar10(cifar10_subset(), "train")
    mean, std = data.channel_mean_std(images)
    floats = images.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), floats.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(
        torch.tensor(std, dtype=torch.float64), floats.std(dim=(0, 2, 3), unbiased=False)
    )
    (_, ty), (_, vy) = data.train_val_split(images, labels, 0.1, seed=3)
    assert len(ty) + len(vy) == len(labels) and len(vy) == sum(
        round(0.1 * int(c)) for c in torch.bincount(labels)
    )


# ---------------------------------------------------------------- fake files


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar_readers_accept_bytes_and_str_keys(tmp_path, bytes_keys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    batches = [rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8) for _ in range(6)]
    for i, images in enumerate(batches[:5], start=1):
        write_cifar_batch(folder / f"data_batch_{i}", images, [i, i, i], "labels", bytes_keys)
    write_cifar_batch(folder / "test_batch", batches[5], [0, 1, 2], "labels", bytes_keys)
    train_x, train_y = data.load_cifar10(tmp_path, "train")
    assert torch.equal(train_x, torch.from_numpy(np.concatenate(batches[:5])))
    assert train_y.tolist() == [i for i in range(1, 6) for _ in range(3)]
    assert data.load_cifar10(tmp_path, "test")[1].tolist() == [0, 1, 2]

    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(
        tmp_path / "cifar-100-python" / "train", images, [99, 0, 5, 42], "fine_labels", bytes_keys
    )
    x, y = data.load_cifar100(tmp_path, "train")
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [99, 0, 5, 42]


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "test").write_bytes(pickle.dumps({"data": Exploit(), "fine_labels": []}))
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        data.load_cifar100(tmp_path, "test")


def test_svhn_reader(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    labels = np.array([[10], [1], [9], [10], [4]], dtype=np.uint8)  # SVHN writes the digit 0 as 10
    (tmp_path / "svhn").mkdir()
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": labels})
    images, y = data.load_svhn(tmp_path, "test")
    assert images.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 9, 0, 4]
    assert torch.equal(images[3, 2], torch.from_numpy(x[:, :, 2, 3]))  # [row, col] of channel 2, image 3


def test_stl10_reader(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    # The files store each channel column-major.
    images.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")
    np.array([1, 10, 4], dtype=np.uint8).tofile(folder / "train_y.bin")
    x, y = data.load_stl10(tmp_path, "train")
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [0, 9, 3]
    np.array([1, 2], dtype=np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(ValueError, match="expected 2 images"):
        data.load_stl10(tmp_path, "train")


def test_tiny_imagenet_reader(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n001", "n002"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    written = {}
    for wnid in wnids:
        (root / "train" / wnid / "images").mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            # PNG content under the .JPEG name keeps the pixels exact; PIL reads by content.
            image_module.fromarray(pixels).save(
                root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", format="PNG"
            )
            written[(wnid, k)] = pixels
    grey = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    image_module.fromarray(grey).save(root / "val" / "images" / "val_0.JPEG", format="PNG")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn002\t0\t0\t63\t63\n")
    x, y = data.load_tiny_imagenet(tmp_path, "train")
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]
    assert torch.equal(x[2], torch.from_numpy(written[("n002", 0)]).permute(2, 0, 1))
    vx, vy = data.load_tiny_imagenet(tmp_path, "test")
    assert vy.tolist() == [1] and all(torch.equal(vx[0, c], torch.from_numpy(grey)) for c in range(3))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "svhn/train_32x32.mat"),
        ("stl10", "stl10_binary/train_X.bin"),
        ("tiny-imagenet", "tiny-imagenet-200/wnids.txt"),
    ],
)
def test_missing_files_name_what_is_expected(tmp_path, name, expected):
    with pytest.raises(data.MissingDataError, match=expected) as error:
        data.load_dataset(name, "train", tmp_path)
    assert "never downloads" in str(error.value)
    with pytest.raises(data.MissingDataError, match="needs a data directory"):
        data.load_dataset(name, "train", None)


def test_registry_and_split_names_are_checked():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*cifar10"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        data.load_cifar10("/nonexistent", "val")
    assert data.dataset_spec("tiny-imagenet").num_classes == 200
    assert data.load_dataset("digits", "test")[0].shape == (360, 3, 32, 32)


# ---------------------------------------------------------------- augmentation, split, statistics


def test_random_crop_flip_takes_windows_of_the_padded_images():
    images = torch.rand(16, 3, 8, 8)
    out = data.random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips = 0
    for i in range(16):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 0 < flips < 16
    again = data.random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(data.random_crop_flip(images, padding=0, flip=False), images)
    with pytest.raises(ValueError, match="padding"):
        data.random_crop_flip(images, padding=-1)


def test_train_val_split_is_deterministic_stratified_and_disjoint():
    labels = torch.arange(100) % 4
    images = torch.arange(100).view(100, 1).float()
    (tx, _), (vx, vy) = data.train_val_split(images, labels, 0.2, seed=5)
    (tx2, _), (vx2, _) = data.train_val_split(images, labels, 0.2, seed=5)
    assert torch.equal(vx, vx2) and torch.equal(tx, tx2)
    assert torch.bincount(vy).tolist() == [5, 5, 5, 5]
    assert sorted(tx.flatten().tolist() + vx.flatten().tolist()) == list(range(100))
    assert not torch.equal(vx, data.train_val_split(images, labels, 0.2, seed=6)[1][0])
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(images, labels, 1.0)


def test_to_unit_interval():
    assert torch.equal(
        data.to_unit_interval(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([0.0, 1.0])
    )
    with pytest.raises(TypeError, match="uint8 or floating"):
        data.to_unit_interval(torch.tensor([1, 2]))
