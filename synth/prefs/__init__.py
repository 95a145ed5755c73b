"""Preference pairs (DPO data) from instruction data: five strategies behind one stage contract.

- ``judge`` (`JudgeStrategy`): sample N responses, an LLM judge rates each 1-10 on a rubric.
- ``pairwise`` (`PairwiseStrategy`): the judge compares responses in both orders; disagreement is a tie.
- ``claims`` (`ClaimsStrategy`): RLAIF-V: responses split into yes/no claims a judge checks; fewer wrong wins.
- ``hallucinate`` (`HallucinateStrategy`): POVID: the reference vs an LLM rewrite with an injected error.
- ``perturb`` (`PerturbStrategy`): offline: the reference vs the reference with one visual fact swapped.

`Prefs` is the operator (``type: prefs`` / ``synth prefs``) over the strategies in `STRATEGIES`.
`build_preferences(source, out, stage)` reads, runs and writes (see `synth.prefs.driver`); the optional
`LengthBalance` filter drops pairs whose lengths differ too much. Output records: ``prompt``, ``chosen``,
``rejected``, ``images``, ``id``, ``meta`` (ratings, rationale, models, strategy, ``prompt_id``).
"""

from synth.prefs.base import Outcome, PreferenceStage, PrefsConfig
from synth.prefs.claims import ClaimsConfig, ClaimsStrategy
from synth.prefs.driver import PrefsResult, build_preferences
from synth.prefs.hallucinate import HallucinateConfig, HallucinateStrategy
from synth.prefs.judge import JudgeConfig, JudgeStrategy
from synth.prefs.length import LengthBalance
from synth.prefs.operator import STRATEGIES, Prefs
from synth.prefs.pairwise import PairwiseConfig, PairwiseStrategy
from synth.prefs.perturb import PerturbConfig, PerturbStrategy, Vocabulary
from synth.prefs.sampling import Sampler, SamplingConfig
from synth.prefs.scene import Scene, SceneIndex

__all__ = [
    "STRATEGIES",
    "ClaimsConfig",
    "ClaimsStrategy",
    "HallucinateConfig",
    "HallucinateStrategy",
    "JudgeConfig",
    "JudgeStrategy",
    "LengthBalance",
    "Outcome",
    "PairwiseConfig",
    "PairwiseStrategy",
    "PerturbConfig",
    "PerturbStrategy",
    "Prefs",
    "PreferenceStage",
    "PrefsConfig",
    "PrefsResult",
    "Sampler",
    "SamplingConfig",
    "Scene",
    "SceneIndex",
    "Vocabulary",
    "build_preferences",
]
