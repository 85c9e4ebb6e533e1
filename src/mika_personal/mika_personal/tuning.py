"""What face and voice fine-tuning share. ROS-free; Keras is imported only to train.

Ensemble variants of a settings dataclass (``name=value,...``), the train / validation /
test split by session with its bookkeeping, and training in stages: first the head, then
layers unfrozen from the top, each stage at a lower learning rate with a cosine schedule,
stopping early on the validation sessions when there are some.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

Dataset = TypeVar('Dataset')
#: (name, epochs, learning rate, layers made trainable at its start)
Stage = Tuple[str, int, float, List]


class TuningSettings:
    """Mixin of the frozen settings dataclasses of face and voice fine-tuning."""

    def check_common(self) -> None:
        """ValueError for a schedule or regularisation both modalities would refuse."""
        if self.head_epochs < 1 or self.unfreeze_epochs < 0 or self.unfreeze_stages < 0:
            raise ValueError('head_epochs must be >= 1, unfreeze_epochs and unfreeze_stages '
                             '>= 0')
        if not 0 < self.learning_rate < 1 or not 0 < self.unfreeze_lr_factor <= 1:
            raise ValueError('learning_rate must be in (0, 1), unfreeze_lr_factor in (0, 1]')
        if not 0 <= self.dropout < 1:
            raise ValueError('dropout must be in [0, 1)')
        if not 0 <= self.label_smoothing < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError('label_smoothing must be in [0, 1), batch_size and patience >= 1')

    def with_changes(self, spec: str):
        """These settings with ``name=value,...`` applied (an ensemble variant)."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        changes = {}
        for item in filter(None, (part.strip() for part in spec.split(','))):
            name, _, value = item.partition('=')
            name = name.strip().replace('-', '_')
            if name not in types or not value:
                raise ValueError(f'variant {spec!r}: {item!r} is not name=value with a name '
                                 f'among {", ".join(types)}')
            kind = types[name]
            if kind in (bool, 'bool'):
                changes[name] = value.strip().lower() in ('1', 'true', 'yes')
            else:
                changes[name] = (int if kind in (int, 'int') else float)(value)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args):
        """The settings from parsed command-line options named like the fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})


@dataclass
class SessionSplit(Generic[Dataset]):
    """Train / validation / test parts of a dataset; no session is in two of them."""

    train: Dataset
    validation: Optional[Dataset]
    test: Optional[Dataset]

    def parts(self) -> Tuple[Tuple[str, Optional[Dataset]], ...]:
        return (('train', self.train), ('validation', self.validation), ('test', self.test))

    def sessions(self) -> Dict[str, List[str]]:
        return {name: sorted(set(part.session_ids.tolist())) if part is not None else []
                for name, part in self.parts()}

    def sizes(self) -> Dict[str, int]:
        return {name: len(part) if part is not None else 0 for name, part in self.parts()}


def unfreeze_plan(settings, layers_from_top: Sequence[List], unit: str) -> List[Stage]:
    """The head stage, then one stage per entry of ``layers_from_top`` (at most
    ``settings.unfreeze_stages``), each at the previous rate times
    ``settings.unfreeze_lr_factor``; ``unit`` names what a stage unfreezes."""
    stages = [('head', settings.head_epochs, settings.learning_rate, [])]
    for stage, layers in enumerate(layers_from_top[:settings.unfreeze_stages], start=1):
        stages.append((f'top {stage} {unit}', settings.unfreeze_epochs,
                       settings.learning_rate * settings.unfreeze_lr_factor ** stage,
                       list(layers)))
    return stages


def train_in_stages(model, stages: Sequence[Stage], data: tuple, steps_per_epoch: int,
                    validation: Optional[tuple], settings, from_logits: bool, log=print,
                    **fit_options) -> List[Dict]:
    """Train ``model`` stage after stage on ``model.fit(*data, **fit_options)``; a record
    per stage run. With ``validation``, each stage stops ``settings.patience`` epochs
    after its best validation loss and keeps that epoch's weights."""
    import keras
    history = []
    for name, epochs, rate, unfrozen in stages:
        if epochs == 0:
            continue
        for layer in unfrozen:
            layer.trainable = True
        schedule = keras.optimizers.schedules.CosineDecay(rate, epochs * steps_per_epoch,
                                                          alpha=0.1)
        model.compile(optimizer=keras.optimizers.Adam(schedule),
                      loss=keras.losses.CategoricalCrossentropy(
                          from_logits=from_logits, label_smoothing=settings.label_smoothing),
                      metrics=['accuracy'])
        stopping = keras.callbacks.EarlyStopping(
            monitor='val_loss', patience=settings.patience, restore_best_weights=True)
        started = time.perf_counter()
        fitted = model.fit(*data, epochs=epochs, validation_data=validation, verbose=0,
                           callbacks=[stopping] if validation is not None else [],
                           **fit_options)
        record = {'stage': name, 'learning_rate': rate, 'epochs_run': len(fitted.epoch),
                  'trainable_parameters': int(sum(np.prod(w.shape)
                                                  for w in model.trainable_weights)),
                  'seconds': round(time.perf_counter() - started, 1),
                  'final_loss': float(fitted.history['loss'][-1])}
        if validation is not None:  # the weights kept are those of the best epoch
            best = stopping.best_epoch
            record.update(best_epoch=best + 1,
                          val_loss=float(fitted.history['val_loss'][best]),
                          val_accuracy=float(fitted.history['val_accuracy'][best]))
        history.append(record)
        log(f'stage {name}: ' + ', '.join(f'{k} {v:.4g}' if isinstance(v, float) else
                                          f'{k} {v}' for k, v in record.items()
                                          if k != 'stage'))
    return history
