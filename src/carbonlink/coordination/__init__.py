"""Firm-platform-government coordination: a differential-game model in the spirit of
Qin et al. (2026), our own formulation (see ../shared/specs/coordination-model.md).

Not implemented yet: this package only reserves its place in the data flow
(platform -> storage -> coordination -> MQTT directives -> plants).
"""

__all__: list[str] = []
