"""Edge detection with fastconv: a 3x3 Laplacian filter over scikit-image's 'camera' photo.

    pip install "fastconv[examples]"
    python examples/edge_detection.py [OUT.png]      # default: camera_edges.png

The same job as `fastconv edges`, written with the library API only.
"""
import sys

import numpy as np

import fastconv.nn.functional as F

try:
    from PIL import Image
    from skimage import data
except ImportError as e:
    sys.exit(f"this example needs scikit-image and Pillow ({e}); "
             "install them with: pip install \"fastconv[examples]\"")

out = sys.argv[1] if len(sys.argv) > 1 else "camera_edges.png"

image = data.camera().astype(np.float32) / 255.0              # (512, 512), values in [0, 1]
laplacian = np.array([[-1, -1, -1],
                      [-1, 8, -1],
                      [-1, -1, -1]], dtype=np.float32)

# conv2d takes NCHW input and (out_channels, in_channels, kh, kw) weights, like torch.
response = F.conv2d(image[None, None], laplacian[None, None], padding="same")[0, 0]

magnitude = np.abs(response)
white = np.percentile(magnitude, 99.5)                       # this strength and above -> white
edges = np.clip(np.rint(magnitude * (255.0 / white)), 0, 255).astype(np.uint8)
Image.fromarray(edges).save(out)
print(f"edges of a {image.shape[1]}x{image.shape[0]} photo written to {out}")
