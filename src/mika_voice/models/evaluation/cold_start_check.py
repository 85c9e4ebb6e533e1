"""Check of the cold-start blend (issue 13, item 5) on new stream orders and seeds.

Not installed, not used by the node: the measurement behind MODEL_CARD.md's top section
and cold_start_levers.txt, kept so that it can be rerun. The card's folds and recipe
(train_voice); per fold a main ensemble (per-speaker standardised rows) and a cold-start
ensemble (rows standardised by the training population's statistics alone), then each
held-out speaker's clips in several random orders through the node's stream normaliser.
Blend fixed in advance: main logits weigh W / (W + 1), W the utterances' worth of the
stream statistics, and the main network alone once W >= 20. From the repository root::

    source scripts/env.sh
    PYTHONPATH=src/mika_voice:$PYTHONPATH python \\
        src/mika_voice/models/evaluation/cold_start_check.py --seeds 0 10 --orders 30
"""
import argparse
from pathlib import Path

import numpy as np

from mika_common.workspace import shared_data_dir
from mika_voice import voice_model as vm
from mika_voice.training import train_voice as tv
from mika_voice.training.corpus import (DEFAULT_AUGMENT_ROUNDS, SEGMENTATION_NODE,
                                        corpus_features, node_voice_values)

COLD_START_WEIGHT, CUT_OFF = 1.0, 20.0
#: New stream orders: order k of fold f is tv.stream_order(..., seed=1000 * k + f); the
#: card's order is seed + f, the training seed's.
ORDER_SEED_STEP = 1000
BINS = ((1, 5), (6, 20), (21, None))


def stream_weights(positions: np.ndarray, half_life: float) -> np.ndarray:
    """W after the update of each utterance: the faded count the normaliser keeps."""
    decay = 0.5 ** (1.0 / half_life)
    return (1.0 - decay ** positions) / (1.0 - decay)


def by_position(correct: np.ndarray, positions: np.ndarray):
    """Accuracy of utterances 1-5, 6-20, 21+ and all."""
    chosen = [(positions >= first) & (positions <= (last or positions.max()))
              for first, last in BINS]
    return [float(correct[rows].mean()) for rows in chosen] + [float(correct.mean())]


def run_seed(data, seed: int, orders: int):
    """{order seed: (baseline figures, blend figures)} over the 5 folds."""
    values = node_voice_values()
    config = tv.TrainConfig(seed=seed)
    y = tv.encode(data.labels)
    order_seeds = [seed] + [ORDER_SEED_STEP * k for k in range(1, orders + 1)]
    main = {o: np.zeros((len(y), 7)) for o in order_seeds}
    blend = {o: np.zeros((len(y), 7)) for o in order_seeds}
    positions = {o: np.zeros(len(y), dtype=np.int64) for o in order_seeds}
    for fold, held_out in enumerate(tv.speaker_folds(data.speakers, 5)):
        test = np.isin(data.speakers, held_out)
        rows = np.flatnonzero(~test)
        trained = tv.fit(*tv.training_rows(data, rows, config), config)
        mean, std = vm.population_statistics(data.features[rows], data.speakers[rows])
        raw = np.concatenate([data.features[rows]] +
                             [data.augmented[r, rows] for r in range(len(data.augmented))])
        labels = np.concatenate([data.labels[rows]] * (1 + len(data.augmented)))
        cold = tv.fit(((raw - mean) / std).astype(np.float32), tv.encode(labels), config)
        test_rows = np.flatnonzero(test)
        cold_logits = cold.logits(((data.features[test] - mean) / std).astype(np.float32))
        for order_seed in order_seeds:
            order = tv.stream_order(data.speakers[test], order_seed + fold)
            standardised = np.empty(data.features[test].shape, dtype=np.float32)
            position = np.empty(len(test_rows), dtype=np.int64)
            for indices in order:
                normaliser = vm.RunningStandardiser(mean, std,
                                                    values['normaliser_prior_weight'],
                                                    values['normaliser_half_life'])
                for count, index in enumerate(indices, 1):
                    normaliser.update(data.features[test][index])
                    standardised[index] = normaliser.transform(data.features[test][index])
                    position[index] = count
            logits = trained.logits(standardised)
            w = stream_weights(position, values['normaliser_half_life'])
            share = np.where(w >= CUT_OFF, 1.0, w / (w + COLD_START_WEIGHT))[:, None]
            main[order_seed][test_rows] = logits
            blend[order_seed][test_rows] = share * logits + (1.0 - share) * cold_logits
            positions[order_seed][test_rows] = position
        print(f'seed {seed}: fold {fold + 1} done', flush=True)
    return {o: (by_position(main[o].argmax(1) == y, positions[o]),
                by_position(blend[o].argmax(1) == y, positions[o])) for o in order_seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 10])
    parser.add_argument('--orders', type=int, default=30, help='new stream orders per seed')
    args = parser.parse_args()
    data = corpus_features(shared_data_dir() / 'ravdess', None, DEFAULT_AUGMENT_ROUNDS,
                           segmentation=SEGMENTATION_NODE, jobs=1)
    text = ' / '.join
    for seed in args.seeds:
        figures = run_seed(data, seed, args.orders)
        card, new = figures.pop(seed), np.array(list(figures.values()))
        print(f'seed {seed}, the card\'s order: baseline {text(f"{v:.3f}" for v in card[0])}'
              f' | blend {text(f"{v:.3f}" for v in card[1])}')
        for name, index in (('baseline', 0), ('blend', 1)):
            print(f'seed {seed}, {len(new)} new orders, {name}: mean '
                  f'{text(f"{v:.3f}" for v in new[:, index].mean(0))} sd '
                  f'{text(f"{v:.3f}" for v in new[:, index].std(0, ddof=1))}')
        gain = new[:, 1] - new[:, 0]
        print(f'seed {seed}, blend - baseline (paired): mean '
              f'{text(f"{v:+.3f}" for v in gain.mean(0))} standard error '
              f'{text(f"{v:.3f}" for v in gain.std(0, ddof=1) / np.sqrt(len(gain)))}')


if __name__ == '__main__':
    main()
