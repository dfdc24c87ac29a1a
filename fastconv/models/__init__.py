"""The model zoo: LeNet-5, AlexNet, VGG-11/16 (+BN), ResNet-18/34/50, SE-ResNet, GoogLeNet,
Xception, MobileNetV2 and EfficientNet-Lite0.

    import fastconv as fc
    model = fc.models.resnet18(num_classes=2)                       # random init
    model = fc.models.resnet18(pretrained="resnet18-f37072fd.pth")  # torchvision's file
    model = fc.models.efficientnet_lite0(pretrained=True)  # weights of an installed package
    fc.models.predict_image(model, "cat.jpg")  # [(285, 'Egyptian cat', 0.8), ...]

Every model has forward_features(x) (the backbone's output before pooling), forward(x),
get_classifier(), reset_classifier(num_classes) (0: forward returns pooled features) and a
`pretrained_cfg` with the preprocessing its weights expect. Attribute names equal the keys of
the checkpoints each family is published with (torchvision's; the EfficientNet-Lite0 package's),
so `load_state_dict` takes those files as they are. No weights are downloaded.
"""
from fastconv.models._registry import create_model, get_preprocessing, list_models
from fastconv.models._predict import class_names, imagenet_classes, predict_image, preprocess
from fastconv.models.alexnet import AlexNet, alexnet
from fastconv.models.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from fastconv.models.googlenet import GoogLeNet, googlenet
from fastconv.models.lenet import LeNet5, lenet5
from fastconv.models.mobilenetv2 import MobileNetV2, mobilenet_v2
from fastconv.models.resnet import (ResNet, resnet18, resnet34, resnet50, se_resnet18,
                                    se_resnet34, se_resnet50)
from fastconv.models.se import SEBlock
from fastconv.models.vgg import VGG, vgg11, vgg11_bn, vgg16, vgg16_bn
from fastconv.models.xception import Xception, xception

__all__ = ["list_models", "create_model", "get_preprocessing", "preprocess", "predict_image",
           "class_names", "imagenet_classes", "SEBlock",
           "LeNet5", "lenet5", "AlexNet", "alexnet", "VGG", "vgg11", "vgg11_bn", "vgg16",
           "vgg16_bn", "ResNet", "resnet18", "resnet34", "resnet50", "se_resnet18",
           "se_resnet34", "se_resnet50", "GoogLeNet", "googlenet", "Xception", "xception",
           "MobileNetV2", "mobilenet_v2", "EfficientNetLite", "efficientnet_lite0"]
