"""Parameter counts the papers print, and shapes."""

import pytest
import torch
from prunebook import models
from prunebook.prune import count_macs, count_parameters


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6), (110, 1.7e6)])
def test_resnet_parameter_counts_match_he_et_al(depth, params):
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M, 1.7M
    assert count_parameters(models.resnet_cifar(depth)) == pytest.approx(params, rel=0.02)


def test_vgg16_matches_li_et_al_table1():
    # Li et al. 2017, Table 1: VGG-16 on CIFAR-10, 1.5e7 parameters and 3.13e8 FLOPs (multiply-adds)
    vgg = models.vgg_cifar(16, classifier="mlp")
    assert count_parameters(vgg) == pytest.approx(15.0e6, rel=0.005)
    assert count_macs(vgg, torch.zeros(1, 3, 32, 32)) == pytest.approx(3.13e8, rel=0.005)


def test_resnet56_flops_match_li_et_al_table1():
    assert count_macs(models.resnet_cifar(56), torch.zeros(1, 3, 32, 32)) == pytest.approx(1.25e8, rel=0.01)


def test_vgg19_matches_network_slimming_table1():
    # Liu et al. 2017, Table 1: VGGNet (19 layers) 20.04M parameters on CIFAR-10
    assert count_parameters(models.vgg_cifar(19)) == pytest.approx(20.04e6, rel=0.001)


def test_lenet_300_100():
    assert count_parameters(models.MLP()) == 266_610


@pytest.mark.parametrize("make", [
    lambda: models.resnet_cifar(20, 10, 1), lambda: models.vgg_cifar(11, 10, 1), lambda: models.SmallCNN(),
    lambda: models.MLP(),
])
def test_28x28_grayscale_forward(make):
    assert make()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_pruned_architectures_can_be_built_from_widths():
    vgg = models.vgg_cifar(11, widths=[8, 16, 16, 16, 32, 32, 32, 32])
    assert vgg.conv_widths() == [8, 16, 16, 16, 32, 32, 32, 32]
    res = models.resnet_cifar(20, mids=[4] * 9, num_classes=100)
    assert res(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    assert count_parameters(res) < count_parameters(models.resnet_cifar(20, num_classes=100))


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth 6n\\+2"):
        models.resnet_cifar(21)
    with pytest.raises(ValueError, match="VGG-16 has 13 conv layers"):
        models.vgg_cifar(16, widths=[8] * 12)
