"""Baseline retrievers behind the same `Retriever` protocol and budget accounting as `ClusterIndex`.

- `DenseRetriever`: everything (exactness reference).
- `OracleTokenTopK`: best tokens by the true attention score (what token-level retrieval approximates).
- `FrameBlockRetriever`: frames with mean-key summaries (ReKV style).
- `QuestPageRetriever`: 16-token pages with min/max key bounds (Quest style).
- `InfLLMBlockRetriever`: 128-token blocks scored through 4 representative keys (InfLLM style).
- `ClusterKVRetriever`: k-means clusters of the keys at a fixed count (ClusterKV style).

Budget rule shared by all (and by `ClusterIndex`): `mosaic_sglang.retrieval.budget.fill_budget`.
"""

from .clusterkv_kmeans import ClusterKVRetriever
from .dense import DenseRetriever
from .frame_blocks import FrameBlockRetriever
from .infllm_blocks import InfLLMBlockRetriever
from .oracle_topk import OracleTokenTopK
from .quest_pages import QUEST_PAGE_SIZE, QuestPageRetriever

__all__ = ["DenseRetriever", "OracleTokenTopK", "FrameBlockRetriever", "QuestPageRetriever", "QUEST_PAGE_SIZE",
           "InfLLMBlockRetriever", "ClusterKVRetriever"]
