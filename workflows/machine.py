"""A published flow version compiled once: its spec, its `transitions` Machine, its schemas.

One Machine per flow version, never one per case: a case is loaded into a throw-away model
object, the event is fired on the shared Machine, and the new state is read back
(docs/architecture.md: about 7 µs a trigger this way; `add_model` per case is slower and grows memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from marshmallow import Schema
from transitions import Machine, MachineError

from .errors import ActionNotAllowed
from .forms import build_schema, transition_schema
from .messages import msg
from .spec import FlowSpec, TransitionSpec


class _CaseModel:
    """Just enough of a model for `transitions`: the state attribute."""

    __slots__ = ("state",)

    def __init__(self, state: str):
        self.state = state


@dataclass
class CompiledFlow:
    spec: FlowSpec
    version_id: int
    version: int
    machine: Machine = field(init=False)
    schemas: dict[str, Schema] = field(init=False, default_factory=dict)
    start_schema: Schema = field(init=False)

    def __post_init__(self) -> None:
        self.machine = Machine(
            model=None,
            states=list(self.spec.states),
            transitions=[
                {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
                for t in self.spec.transitions
                if t.sources
            ],
            initial=self.spec.initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        for t in self.spec.transitions:
            for source in t.sources:
                self.schemas[f"{t.trigger}@{source}"] = transition_schema(self.spec.fields, t)
        # Initial data may set only what `start: {accepts}` names; none is required.
        self.start_schema = build_schema(self.spec.fields, (), self.spec.start.accepts)

    def transition(self, trigger: str, state: str) -> TransitionSpec:
        t = self.spec.transition(trigger, state)
        if t is None:
            possible = ", ".join(x.trigger for x in self.spec.transitions_from(state)) or "none"
            if not any(x.trigger == trigger for x in self.spec.transitions):
                raise ActionNotAllowed(
                    msg("machine.flow_has_no_action", spec_flow=self.spec.flow, trigger=trigger,
                        state=state, possible=possible))
            # Named as the people who use it see them: the step's and the actions' labels.
            named = next(x for x in self.spec.transitions if x.trigger == trigger)
            here = [x.label for x in self.spec.transitions_from(state)]
            raise ActionNotAllowed(
                msg("machine.action_not_possible_state", trigger=trigger, state=state,
                    possible=possible, t_label=named.label,
                    state_label=self.spec.states[state].label,
                    labels=here or msg("machine.no_action_here")))
        return t

    def schema(self, t: TransitionSpec, state: str) -> Schema:
        return self.schemas[f"{t.trigger}@{state}"]

    def fire(self, trigger: str, state: str) -> str:
        """Run the trigger on the shared Machine and return the destination state."""
        model = _CaseModel(state)
        try:
            self.machine.events[trigger].trigger(model)
        except (MachineError, KeyError) as exc:  # transition() checked first; kept for safety
            raise ActionNotAllowed(msg("machine.action_not_possible_state_2", trigger=trigger,
                                       state=state)) from exc
        return model.state
