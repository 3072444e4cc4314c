"""The public SAM edge re-implementation's steps after the masks, run with OpenCV-contrib itself: a
test-only oracle, run as a script by an interpreter that has `opencv-contrib-python-headless` (it
cannot share an environment with ultralytics' `opencv-python`: both install the `cv2` package).

    python opencv_reference.py IN.npz OUT.npz

IN holds `edges`, the normalized map (float32 [H, W]); OUT gets each step the re-implementation takes
(`pipeline.py`): `blurred` (GaussianBlur 3x3, sigma 0), `orientation` (computeOrientation of it),
`nms` (edgesNms at its defaults r=2, s=0, m=1) and `png` (uint8(255 nms), as it writes the PNG).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

# computeOrientation and edgesNms are methods of a structured-forest detector, which loads a model
# file; they read only its gradientNormalizationRadius (4 in the model file the re-implementation
# uses, opencv_extra's testdata/cv/ximgproc/model.yml.gz), so a forest without trees serves.
MODEL = """%YAML:1.0
options:
  stride: 2
  shrinkNumber: 2
  patchSize: 32
  patchInnerSize: 16
  numberOfGradientOrientations: 4
  gradientSmoothingRadius: 0
  regFeatureSmoothingRadius: 2
  ssFeatureSmoothingRadius: 8
  gradientNormalizationRadius: 4
  selfsimilarityGridSize: 5
  numberOfTrees: 1
  numberOfTreesToEvaluate: 1
childs: []
featureIds: []
thresholds: []
edgeBoundaries: []
edgeBins: []
"""


def main(source: str, target: str) -> None:
    edges = np.load(source)["edges"].astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.yml"
        model.write_text(MODEL)
        detector = cv2.ximgproc.createStructuredEdgeDetection(str(model))
    blurred = cv2.GaussianBlur(edges, (3, 3), 0)
    orientation = detector.computeOrientation(blurred)
    nms = detector.edgesNms(blurred, orientation)
    png = (nms * 255).astype(np.uint8)
    np.savez(target, blurred=blurred, orientation=orientation, nms=nms, png=png)


if __name__ == "__main__":
    main(*sys.argv[1:])
