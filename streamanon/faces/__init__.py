"""Face stage: detection, landmarks, alignment, identity embeddings (and tracking).

Heavy backends (onnxruntime, dlib) are imported when a model class is instantiated, so
importing this package stays cheap.
"""

from .align import align_face, face_mask, similarity_transform, warp_to_frame
from .detect import CenterFaceDetector
from .embed import DlibHogDetector, FaceEmbedder, embedding_distance
from .landmarks import LandmarkPredictor, inter_ocular, read_pts

__all__ = [
    "CenterFaceDetector",
    "LandmarkPredictor",
    "FaceEmbedder",
    "DlibHogDetector",
    "align_face",
    "warp_to_frame",
    "face_mask",
    "similarity_transform",
    "embedding_distance",
    "inter_ocular",
    "read_pts",
]
