"""A tiny TotalSegmentator model for tests: the real folder layout, random weights, tiny plans.

``make_totalseg_weights(root)`` writes what TotalSegmentator's 'total' 3 mm fast model looks like
on disk (``root/nnunet/results/Dataset297_TotalSegmentator_total_3mm_1559subj/
nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres/{dataset.json, plans.json,
fold_0/checkpoint_final.pth}``), in the plans format and checkpoint contents of the published
weights (old-style plans with ``UNet_class_name``; numpy scalars in the checkpoint), but with a
two-stage 4/8-feature U-Net on 16-voxel patches: nnU-Net loads and runs it on the CPU in
about a second. Point ``SYNTHARENA_TOTALSEG_WEIGHTS_DIR`` (or ``weights_dir``) at ``root``.

``favoured`` labels: only these can win the argmax (the others get a large negative bias), so
the segmentation varies with the image but always among labels a test scores. ``constant``:
every voxel gets that label (the network's last layer is only a bias).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.segmentation.totalseg import CHECKPOINT, DATASET, FOLD, MODEL, TRAINER

N_LABELS = 118  # TotalSegmentator 'total': background + 117 structures
PATCH = [16, 16, 16]


def _plans() -> dict[str, Any]:
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": PATCH, "median_image_size_in_voxels": [32.0, 32.0, 32.0],
        "spacing": [3.0, 3.0, 3.0], "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False], "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": 4, "n_conv_per_stage_encoder": [1, 1],
        "n_conv_per_stage_decoder": [1], "num_pool_per_axis": [1, 1, 1],
        "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2]],
        "conv_kernel_sizes": [[3, 3, 3], [3, 3, 3]], "unet_max_num_features": 8,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                      "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                     "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
        "batch_dice": False,
    }
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
        "original_median_shape_after_transp": [32, 32, 32],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        # The published model's CT statistics (its normalisation clips to the percentiles).
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 37283.0, "mean": -50.38697721419439, "median": 42.0, "min": -28071.0,
            "percentile_00_5": -1004.0, "percentile_99_5": 1588.0, "std": 503.39235619144}},
    }


def _dataset_json() -> dict[str, Any]:
    labels = {"background": 0, **{f"structure_{i}": i for i in range(1, N_LABELS)}}
    return {"name": "tiny test model", "channel_names": {"0": "CT"}, "labels": labels,
            "numTraining": 1, "file_ending": ".nii.gz",
            "overwrite_image_reader_writer": "NibabelIOWithReorient"}


def make_totalseg_weights(
    root: Path,
    *,
    seed: int = 0,
    favoured: Sequence[int] = (),
    constant: int | None = None,
) -> Path:
    """Write the tiny model under ``root`` (a TotalSegmentator home); returns ``root``."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = root / "nnunet" / "results" / DATASET / MODEL
    (folder / f"fold_{FOLD}").mkdir(parents=True, exist_ok=True)
    plans, dataset = _plans(), _dataset_json()
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))

    with warnings.catch_warnings():  # the old plans format is the published weights' format
        warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")
        config = PlansManager(plans).get_configuration("3d_fullres")
    torch.manual_seed(seed)
    network = get_network_from_plans(
        config.network_arch_class_name, config.network_arch_init_kwargs,
        config.network_arch_init_kwargs_req_import, 1, N_LABELS, allow_init=True,
        deep_supervision=False)
    head = network.decoder.seg_layers[-1]
    with torch.no_grad():
        if constant is not None:
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[constant] = 10.0
        elif favoured:
            penalty = torch.full((N_LABELS,), -1e3)
            penalty[list(favoured)] = 0.0
            head.bias.add_(penalty)
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": TRAINER,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": FOLD,
                      "dataset_json": dataset, "unpack_dataset": True,
                      "device": torch.device("cpu")},
        "inference_allowed_mirroring_axes": (0, 1, 2),
        # As in published nnU-Net checkpoints: numpy scalars, which torch's weights-only
        # loading refuses unless allowed.
        "_best_ema": np.float64(0.5),
        "current_epoch": 1,
    }
    torch.save(checkpoint, folder / f"fold_{FOLD}" / CHECKPOINT)
    return root
