"""Declared, described and validated node parameters.

Every Mika node lists its parameters as :class:`ParamSpec` entries; :class:`ParameterSet`
declares them with a ``ParameterDescriptor`` (description, range, read-only flag), refuses an
invalid runtime change with a reason the caller sees (``ros2 param set`` prints it), and tells
the node which values changed so it can apply them.

:class:`ParamSpec` is ROS-free (rclpy and rcl_interfaces are imported only where a
descriptor is made or a node is given), so the parameter lists, and the offline tools that
validate a params file against them, work without a ROS installation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from mika_common.echo import echo

if TYPE_CHECKING:
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.node import Node
    from rclpy.parameter import Parameter

Validator = Callable[[Any], Optional[str]]
#: Reliability of a sensor subscription (see ``mika_common.ros_io.sensor_qos``).
RELIABILITY_CHOICES = ('best_effort', 'reliable')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default (which fixes its type), meaning and admissible values.

    ``validator`` returns an error text for a value the range and choices cannot express
    (e.g. a list whose entries must be unique); ``None`` means valid.
    """

    name: str
    default: Any
    description: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Optional[Sequence[Any]] = None
    read_only: bool = False
    validator: Optional[Validator] = None

    def coerce(self, value: Any) -> Any:
        """An integer given for a floating-point parameter (``1`` for ``1.0``) is accepted."""
        if isinstance(self.default, float) and isinstance(value, int) \
                and not isinstance(value, bool):
            return float(value)
        if isinstance(self.default, (list, tuple)) and isinstance(value, (list, tuple)):
            return list(value)
        return value

    def check(self, value: Any) -> Optional[str]:
        """Return why ``value`` (already coerced) is not acceptable, or ``None``."""
        expected = list if isinstance(self.default, (list, tuple)) else type(self.default)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            return (f'{self.name} must be of type {expected.__name__}, '
                    f'got {type(value).__name__} {echo(value)}')
        numbers = value if isinstance(value, (list, tuple)) else [value]
        for number in numbers:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                if number != number:  # NaN
                    return f'{self.name} must not be NaN'
                if self.min_value is not None and number < self.min_value:
                    return f'{self.name}={number} is below its minimum {self.min_value}'
                if self.max_value is not None and number > self.max_value:
                    return f'{self.name}={number} is above its maximum {self.max_value}'
        if self.choices is not None and value not in self.choices:
            return f'{self.name}={echo(value)} is not one of {list(self.choices)}'
        if self.validator is not None:
            return self.validator(value)
        return None

    def descriptor(self) -> 'ParameterDescriptor':
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
        text = self.description
        if self.choices is not None:
            text += f' One of: {", ".join(map(str, self.choices))}.'
        # dynamic_typing: the type is checked by check(), which also accepts 1 for 1.0
        descriptor = ParameterDescriptor(
            name=self.name, description=text, read_only=self.read_only,
            dynamic_typing=True)
        scalar = self.default
        if isinstance(scalar, bool) or self.min_value is None or self.max_value is None:
            return descriptor
        if isinstance(scalar, int):
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.min_value), to_value=int(self.max_value), step=1)]
        elif isinstance(scalar, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)]
        return descriptor


class ParameterSet:
    """Declares ``specs`` on ``node`` and keeps their validated current values.

    Values from a params file that fail validation stop the node at start with the reason
    (a wrong YAML is a configuration error, not something to run with). Runtime changes
    that fail are refused with the reason; valid ones are stored, then ``on_change`` is
    called with ``{name: new_value}``.
    """

    def __init__(self, node: 'Node', specs: Iterable[ParamSpec],
                 on_change: Optional[Callable[[Dict[str, Any]], None]] = None):
        from rclpy.exceptions import (
            InvalidParameterTypeException, InvalidParameterValueException)
        self._node = node
        self._specs: Dict[str, ParamSpec] = {spec.name: spec for spec in specs}
        self._on_change = on_change
        self._values: Dict[str, Any] = {}
        problems: List[str] = []
        for spec in self._specs.values():
            try:
                value = spec.coerce(node.declare_parameter(
                    spec.name, spec.default, spec.descriptor()).value)
            except (InvalidParameterTypeException, InvalidParameterValueException) as error:
                problems.append(str(error))  # rclpy's own range check of the params file
                continue
            problem = spec.check(value)
            if problem:
                problems.append(problem)
            self._values[spec.name] = value
        if problems:
            raise ValueError('invalid parameters: ' + '; '.join(problems))
        node.add_on_set_parameters_callback(self._validate_and_apply)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    @property
    def values(self) -> Mapping[str, Any]:
        return dict(self._values)

    def _validate_and_apply(self, parameters: List['Parameter']) -> 'SetParametersResult':
        from rcl_interfaces.msg import SetParametersResult
        changed: Dict[str, Any] = {}
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is None:
                continue  # parameters of rclpy itself (use_sim_time ...)
            value = spec.coerce(parameter.value)
            problem = spec.check(value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            changed[parameter.name] = value
        if changed:
            previous = {name: self._values[name] for name in changed}
            self._values.update(changed)
            if self._on_change is not None:
                try:
                    self._on_change(changed)
                except ValueError as error:  # the node found the combination invalid
                    self._values.update(previous)
                    return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)
