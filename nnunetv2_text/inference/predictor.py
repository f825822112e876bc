"""TextPredictor: nnU-Net's predictor with prompts.

Reused from ``nnUNetPredictor``: preprocessing from the plans (multiprocess), the Gaussian-weighted
sliding window, fold ensembling, padding, device fallback. Changed:

- the network is rebuilt from the checkpoint's ``text`` entry with the trainer's builder;
- each tile is encoded ONCE and all prompts of the case are decoded from it, in chunks whose size is
  measured on the first tiles (:meth:`TextPredictor._calibrate_chunk`: the fastest per prompt within
  1.5x the memory of decoding one prompt at a time, as VoxTell's loop does), or fixed by
  ``prompt_batch_size``; halved and retried on CUDA out-of-memory;
- one output channel per prompt (sigmoid), exported as one binary mask per prompt;
- test-time mirroring never flips the left-right axis (dropped again here, whatever the checkpoint says).
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.native_spacing import TextConfigurationManager
from nnunetv2_text.inference.prompt_file import (DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY, FOREIGN_NEIGHBOURS,
                                                 DEFAULT_WORDING, ON_UNKNOWN, WORDINGS)
from nnunetv2_text.network import TextNetworkConfig, build_text_network, unwrap_network
from nnunetv2_text.text.cache import EmbeddingCache
from nnunetv2_text.text.encoder import TextEncoder
from nnunetv2_text.text.foreign import FOREIGN_FILE
from nnunetv2_text.text.sides import prompt_side, side_consistent_term, vocabulary_sides
from nnunetv2_text.text.vocabulary import parse_vocabulary
from nnunetv2_text.utils.laterality import mirror_axes_without
from nnunetv2_text.utils.orientation import canonical_reader

logger = logging.getLogger(__name__)

#: a chunk of prompts may use at most this multiple of the peak memory of decoding one prompt (VoxTell's
#: own loop decodes one at a time; issue #25 bounds the batched decoder by it)
CHUNK_MEMORY_FACTOR = 1.5
#: a larger chunk is chosen only if it decodes a prompt more than this fraction faster than a smaller one
CHUNK_TIE = 0.05

CACHE_IN_MODEL = Path("text") / "embeddings.safetensors"


def check_model_folder(folder: Path) -> dict:
    """The model folder's dataset.json, or an error saying that the folder is no trained model's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: model folder not found")
    missing = [f for f in ("dataset.json", "plans.json") if not (folder / f).is_file()]
    if missing:
        raise UserInputError(f"{folder}: not a trained nnU-Net model folder (no {' or '.join(missing)}); give the "
                             "folder that holds fold_0, ..., named <trainer>__<plans>__<configuration>")
    try:
        return json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserInputError(f"{folder / 'dataset.json'}: not valid JSON ({e})") from None


class _PromptHeads:
    """Stands in for nnU-Net's label manager inside the sliding window: one output channel per prompt."""

    def __init__(self, n: int):
        self.num_segmentation_heads = n


def _network_from_checkpoint(managers: tuple, text_entry: dict, weights: dict) -> torch.nn.Module:
    """The text network of a checkpoint, rebuilt by the one builder from its ``text`` entry."""
    plans_manager, configuration_manager, dataset_json = managers
    n_in = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    # a trainer whose encoder is not the plans' (VoxTell fine-tuning) records its own
    network = build_text_network(text_entry.get("arch_kwargs", configuration_manager.network_arch_init_kwargs),
                                 text_entry.get("arch_requires_import",
                                                configuration_manager.network_arch_init_kwargs_req_import),
                                 n_in, TextNetworkConfig.from_dict(text_entry["network_config"]),
                                 deep_supervision=False, initialize=False)
    network.load_state_dict(weights)
    return network


class TextPredictor(nnUNetPredictor):
    def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, use_mirroring: bool = True,
                 perform_everything_on_device: bool = True, device: torch.device = torch.device("cuda"),
                 verbose: bool = False, allow_tqdm: bool = True, prompt_batch_size: int = 0):
        super().__init__(tile_step_size, use_gaussian, use_mirroring, perform_everything_on_device, device,
                         verbose, False, allow_tqdm)
        #: prompts decoded together per tile; 0: measured on the first tile (:meth:`_calibrate_chunk`)
        self.prompt_batch_size = prompt_batch_size
        self.chunk_timings: Dict[int, float] = {}  # chunk size -> seconds per prompt, from the calibration
        self.chunk_choice: Optional[int] = None  # the size the last calibration chose
        self._chunk_cap: Optional[int] = None  # CUDA: the largest chunk within CHUNK_MEMORY_FACTOR
        self.text_entry: Optional[dict] = None
        self.model_folder: Optional[Path] = None
        self._text: Optional[torch.Tensor] = None
        self._directions: Optional[torch.Tensor] = None  # a refiner's instruction directions, see set_prompts
        self._centred_terms: Optional[torch.Tensor] = None
        self._centred_foreign: Optional[torch.Tensor] = None
        self._foreign: List[str] = []
        #: called as ``tile_progress(done, total)`` after each sliding-window tile of a case (all folds
        #: counted), so that an interactive caller (the napari widget) can show how far a case has come
        self.tile_progress: Optional[Callable[[int, int], None]] = None
        self._tiles = [0, 0]  # done, total of the case being predicted

    # ------------------------------------------------------------------ loading
    def initialize_from_trained_model_folder(self, model_training_output_dir: str,
                                             use_folds: Union[Sequence[Union[int, str]], None] = None,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        """Load plans, dataset.json and the folds' checkpoints (``torch.load`` as nnU-Net does)."""
        folder = Path(model_training_output_dir)
        dataset_json = check_model_folder(folder)
        if use_folds is None:
            use_folds = nnUNetPredictor.auto_detect_available_folds(str(folder), checkpoint_name)
        if isinstance(use_folds, (str, int)):
            use_folds = [use_folds]
        if not use_folds:
            raise UserInputError(f"{folder}: no fold_*/{checkpoint_name} found")
        plans_manager = PlansManager(json.loads((folder / "plans.json").read_text()))
        params, first = [], None
        for f in use_folds:
            f = f if f == "all" else int(f)
            ckpt_file = folder / f"fold_{f}" / checkpoint_name
            if not ckpt_file.is_file():
                raise UserInputError(f"{ckpt_file}: checkpoint not found")
            ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
            if "text" not in ckpt:
                raise UserInputError(f"{ckpt_file}: not a text model checkpoint (trainer {ckpt.get('trainer_name')})")
            if first is None:
                first = ckpt
            elif ckpt["text"]["network_config"] != first["text"]["network_config"]:
                raise UserInputError(f"{ckpt_file}: network config differs from the other folds")
            params.append(ckpt["network_weights"])
        configuration_manager = TextConfigurationManager(
            plans_manager.get_configuration(first["init_args"]["configuration"]).configuration)
        self.model_folder = folder
        managers = (plans_manager, configuration_manager, dataset_json)
        network = _network_from_checkpoint(managers, first["text"], params[0])
        self._setup(managers, first["text"], first["trainer_name"], first.get("inference_allowed_mirroring_axes"),
                    network, params)

    def initialize_from_network(self, network: torch.nn.Module, managers: tuple, text_entry: dict,
                                trainer_name: str, mirror_axes: Optional[Sequence[int]]) -> None:
        """A live network, as a trainer's final validation has it (``managers``: its plans manager,
        configuration manager and dataset.json; ``text_entry``: what its checkpoint would store)."""
        self._setup(managers, text_entry, trainer_name, mirror_axes, unwrap_network(network))

    def _setup(self, managers: tuple, text_entry: dict, trainer_name: str, mirror_axes, network,
               params: Optional[list] = None) -> None:
        plans_manager, configuration_manager, dataset_json = managers
        self.plans_manager, self.configuration_manager = plans_manager, configuration_manager
        self.dataset_json, self.trainer_name = dataset_json, trainer_name
        self.list_of_parameters = params if params is not None else [network.state_dict()]
        self.network = network
        self.text_entry = text_entry
        self._centred_terms = self._centred_foreign = None
        # an imported open-vocabulary model (VoxTell) has no training vocabulary to compare prompts with
        self.vocabulary = None if text_entry.get("vocabulary") is None else \
            parse_vocabulary(text_entry["vocabulary"], source=f"{trainer_name} checkpoint")
        self.allowed_mirroring_axes = mirror_axes_without(
            tuple(mirror_axes) if mirror_axes is not None else None, text_entry.get("left_right_axis"))
        self.label_manager = _PromptHeads(0)

    @property
    def canonical_reader(self) -> Optional[str]:
        """The reorienting reader the model's plans read with (None: storage order, an older model)."""
        return canonical_reader(self.dataset_json, self.plans_manager.plans)

    @property
    def num_input_channels(self) -> int:
        return determine_num_input_channels(self.plans_manager, self.configuration_manager, self.dataset_json)

    # ------------------------------------------------------------------ text
    def text_encoder(self, device: str = "cpu") -> TextEncoder:
        """The encoder the model was trained with (as recorded in the checkpoint)."""
        enc = TextEncoder(self.text_entry["model_id"], self.text_entry["instruction"], device)
        return enc

    def embed_prompts(self, prompts: Sequence[str], cache_file: Optional[Path] = None,
                      encoder_device: str = "cpu") -> np.ndarray:
        """(N, dim) embeddings from the model's cache; prompts it lacks are encoded with the checkpoint's
        encoder and added to the cache (atomically)."""
        model_id, instruction = self.text_entry["model_id"], self.text_entry["instruction"]
        dim = self.text_entry["embedding_dim"]
        if self.text_entry.get("lowercase"):  # VoxTell's recipe embeds lower-cased prompts
            prompts = [p.lower() for p in prompts]
        if cache_file is None and self.model_folder is not None:
            cache_file = self.model_folder / CACHE_IN_MODEL
        cache = EmbeddingCache(cache_file) if cache_file is not None else None
        if cache is not None and not cache.missing(model_id, instruction, prompts):
            return cache.get(model_id, instruction, prompts, expected_dim=dim)
        encoder = self.text_encoder(encoder_device)
        if cache is None:
            encoder.check_length(prompts)
            emb = encoder.encode(list(prompts))
        else:
            cache.update_with(encoder, prompts)
            emb = cache.get(model_id, instruction, prompts, expected_dim=dim)
            cache.save()
        if emb.shape[1] != dim:
            raise UserInputError(f"encoder {model_id} gives dimension {emb.shape[1]}, the model expects {dim}")
        return emb

    @property
    def foreign_pool(self) -> List[str]:
        """The phrases the model was taught to answer with nothing (the checkpoint's list; for checkpoints
        written before it was recorded, the model folder's copy of the dataset's pool; else none)."""
        pool = self.text_entry.get("foreign")
        if pool is None and self.model_folder is not None:
            f = self.model_folder / CACHE_IN_MODEL.parent / FOREIGN_FILE
            pool = json.loads(f.read_text(encoding="utf-8"))["prompts"] if f.is_file() else []
        return list(pool or [])

    @torch.inference_mode()
    def understand(self, prompts: Sequence[str], embeddings: np.ndarray,
                   min_similarity: float = DEFAULT_MIN_SIMILARITY, cache_file: Optional[Path] = None,
                   encoder_device: str = "cpu", min_margin: float = DEFAULT_MIN_MARGIN) -> Dict[str, dict]:
        """What the model makes of each prompt, in the space the network sees (cosine after centring on the
        training vocabulary): its nearest training term and that term's concept, and how close it is to
        the foreign pool, the phrases taught to give an empty mask.

        Returns ``{prompt: {"concept", "term", "similarity", "foreign_term", "foreign_similarity", "margin",
        "side", "known", "unknown_because"}}``. A prompt naming one side (``side``: left or right) is only
        understood as a concept of that side or of none; one naming both sides or none, whose nearest
        concept is one-sided, as that concept with its other-side twin where the vocabulary has exactly
        that (text/sides.py). A prompt is unknown when its similarity is below ``min_similarity``, or
        when it beats the mean similarity of its nearest foreign phrases (``foreign_similarity``) by less
        than ``min_margin``: a similarity threshold alone cannot work across vocabularies, since
        centring on a narrow vocabulary (two tissues) makes every text look similar to it. A vocabulary
        term is always known. Needs only the embeddings, so it runs before any image is read."""
        if self.vocabulary is None:
            return {p: {"concept": None, "term": None, "similarity": None, "foreign_term": None,
                        "foreign_similarity": None, "margin": None, "side": prompt_side(p), "known": True,
                        "unknown_because": None}
                    for p in prompts}
        terms = self.vocabulary.all_terms()
        center = self.network.prompt_decoder.center_text
        if self._centred_terms is None:  # the vocabulary's and pool's embeddings, read once per model
            self._centred_terms = center(torch.as_tensor(self.embed_prompts(terms, cache_file, encoder_device)))
            self._foreign = self.foreign_pool
            self._centred_foreign = center(torch.as_tensor(
                self.embed_prompts(self._foreign, cache_file, encoder_device))) if self._foreign else None
        pool = self._foreign
        x = center(torch.as_tensor(embeddings))
        sims = x @ self._centred_terms.T
        # the nearest term among the concepts the prompt's side words allow (text/sides.py: why)
        side_of, concept_of = vocabulary_sides(self.vocabulary), [self.vocabulary.lookup(t) for t in terms]
        rows = torch.tensor([side_consistent_term(p, row.tolist(), terms, self.vocabulary, side_of, concept_of)
                             for p, row in zip(prompts, sims)], dtype=torch.long)
        best = sims.gather(1, rows[:, None])[:, 0]
        if self._centred_foreign is not None:
            near, near_rows = (x @ self._centred_foreign.T).topk(min(FOREIGN_NEIGHBOURS, len(pool)), dim=1)
            foreign_sim, foreign_row = near.mean(1).tolist(), near_rows[:, 0].tolist()
        else:
            foreign_sim, foreign_row = [None] * len(prompts), [None] * len(prompts)
        out = {}
        for prompt, s, j, fs, fj in zip(prompts, best.tolist(), rows.tolist(), foreign_sim, foreign_row):
            is_term = self.vocabulary.lookup(prompt) is not None  # a training term is known as such
            s = 1.0 if is_term else s
            margin = None if fs is None else s - fs
            because = None if is_term else "similarity" if s < min_similarity else \
                "foreign" if margin is not None and margin < min_margin else None
            out[prompt] = {"concept": self.vocabulary.lookup(terms[j]).id, "term": terms[j],
                           "similarity": round(float(s), 4), "foreign_term": None if fj is None else pool[fj],
                           "foreign_similarity": None if fs is None else round(float(fs), 4),
                           "margin": None if margin is None else round(float(margin), 4),
                           "side": prompt_side(prompt), "known": because is None, "unknown_because": because}
        return out

    @staticmethod
    def prompts_to_empty(understood: Dict[str, dict], on_unknown: str, min_similarity: float,
                         min_margin: float = DEFAULT_MIN_MARGIN) -> set:
        """Apply ``on_unknown`` to :meth:`understand`'s answer: ``error`` raises (naming the first unknown
        prompt and its nearest concept), ``warn`` and ``empty`` log each unknown prompt; returns the prompts
        whose masks are to be written empty. The one policy behind the command and the Python API."""
        if on_unknown not in ON_UNKNOWN:
            raise UserInputError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got '{on_unknown}'")
        unknown = [p for p, u in understood.items() if not u["known"]]
        for p in unknown:
            u = understood[p]
            msg = (f"prompt '{p}' names nothing the model learned: its nearest training term is '{u['term']}' "
                   f"(concept '{u['concept']}') at similarity {u['similarity']:.3f}")
            if u["unknown_because"] == "similarity":
                msg, hint = f"{msg} < {min_similarity}", "lower --min_similarity"
            else:
                msg = (f"{msg}, no more than {u['margin']:.3f} (< {min_margin}) above phrases the model was taught "
                       f"to answer with nothing (nearest: '{u['foreign_term']}')")
                hint = "lower --min_margin"
            if on_unknown == "error":
                raise UserInputError(f"{msg} (--on_unknown error; {hint} to accept it)")
            logger.warning("%s; its masks are %s", msg, "written empty" if on_unknown == "empty" else "flagged")
        return set(unknown) if on_unknown == "empty" else set()

    def reword(self, prompts: Sequence[str], embeddings: np.ndarray, understood: Dict[str, dict],
               wording: str = DEFAULT_WORDING, cache_file: Optional[Path] = None,
               encoder_device: str = "cpu") -> np.ndarray:
        """The embeddings the network is given. ``nearest_term`` gives each known prompt its nearest
        training term's embedding, so that wordings the network never saw get the answer of the concept
        they were understood as (the manifest says which); unknown prompts, and every prompt of a model
        without a vocabulary, keep their own."""
        if wording not in WORDINGS:
            raise UserInputError(f"wording must be one of {', '.join(WORDINGS)}, got '{wording}'")
        if wording == "as_written" or self.vocabulary is None:
            return embeddings
        swap = {i: understood[q]["term"] for i, q in enumerate(prompts)
                if q in understood and understood[q]["known"] and understood[q]["term"] != q}
        if not swap:
            return embeddings
        terms = list(dict.fromkeys(swap.values()))
        term_emb = self.embed_prompts(terms, cache_file, encoder_device)
        out = np.array(embeddings, copy=True)
        for i, t in swap.items():
            out[i] = term_emb[terms.index(t)]
        return out

    def set_prompts(self, embeddings: Union[np.ndarray, torch.Tensor],
                    directions: Optional[np.ndarray] = None) -> None:
        """Embeddings (N, dim) of the prompts of the next case(s); a refiner with ``direction_channels`` also
        takes its instruction's directions (1, 2 (K-1), ``text.instructions.instruction_directions``), which
        each tile gets as constant input planes."""
        if self.network_config.direction_channels and directions is None:
            raise ValueError("this refiner reads its instruction's directions: pass directions= to set_prompts "
                             "(text.instructions.instruction_directions)")
        self._text = torch.as_tensor(embeddings, dtype=torch.float32)
        self._directions = None if directions is None else torch.as_tensor(directions, dtype=torch.float32)
        self.label_manager = _PromptHeads(self._text.shape[0] * self.network_config.outputs_per_prompt)

    @property
    def network_config(self) -> TextNetworkConfig:
        return TextNetworkConfig.from_dict(self.text_entry["network_config"])

    # ------------------------------------------------------------------ the per-tile hook
    def _calibrate_chunk(self, skips: List[torch.Tensor], queries: torch.Tensor, x: torch.Tensor) -> List[torch.Tensor]:
        """Decode a tile's prompt queries in chunks of 1, 2, 4, ... prompts, timing each, and decode the rest with
        the size that was fastest per prompt; -> the decoded chunks (nothing is decoded twice).

        What a prompt costs depends on the device and the network: on a CPU VoxTell's 440M decoder is slower
        per prompt in one batch than in a loop, a small decoder several times faster (docs/PERFORMANCE.md);
        on a GPU a batch is faster until memory runs out. So the size is measured, not fixed. A chunk may not
        use more than ``CHUNK_MEMORY_FACTOR`` times the peak memory of decoding one prompt (measured on
        CUDA); sizes stop growing there, at the tile's prompt count, or at the first size that would not be
        chosen (not ``CHUNK_TIE`` faster per prompt than a smaller one): measuring a size that loses costs
        its prompts, and the sizes past the first loser lose too. Measurements carry over to the next tile
        until that happens; then the best size is kept for good. The first prompt is decoded alone and not
        timed: the first call pays for kernel selection and allocator growth. The next two are timed alone
        and the faster counts: on a CPU one inflated single-prompt timing made chunks of 2 look faster, and
        they decoded VoxTell's configuration at 0.78x its loop (10 prompts, docs/results/voxtell_decoding.md).
        """
        device, n = skips[0].device, queries.shape[1]
        cuda = device.type == "cuda"

        def decode(k0: int, k: int) -> tuple:
            if cuda:
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            out = self.network.decode(skips, None, x, queries=queries[:, k0:k0 + k])
            if cuda:
                torch.cuda.synchronize(device)
            return out, (time.perf_counter() - t) / k

        timings, outs, i = self.chunk_timings, [], 0
        if not timings:
            if cuda:
                base = torch.cuda.memory_allocated(device)
            outs.append(decode(0, 1)[0])
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            singles = []
            for k in range(1, min(n, 3)):  # the faster of two: one slow timing would buy larger chunks
                out, t = decode(k, 1)
                outs.append(out)
                singles.append(t)
            timings[1], i = min(singles), 1 + len(singles)
            if cuda:
                peak = torch.cuda.max_memory_allocated(device)
                self._chunk_cap = max(1, int((CHUNK_MEMORY_FACTOR * peak - base) // max(peak - base, 1)))
        cap = min(n, self._chunk_cap or n)
        size, concluded = 2 * max(timings), False
        while True:
            best = self._preferred_chunk(timings)
            if size > cap or best < max(timings):
                concluded = True
                break
            if i + size > n:  # this tile's prompts ran out: the next tile goes on measuring
                break
            out, timings[size] = decode(i, size)
            outs.append(out)
            i += size
            size *= 2
        self.chunk_choice = best
        if concluded:
            self.prompt_batch_size = best
            logger.info("decoding %d prompt(s) at a time (seconds per prompt by chunk size: %s)", best,
                        {k: round(v, 4) for k, v in timings.items()})
        if i < n:
            outs.append(self._decode_chunks(skips, queries[:, i:], x, best))
        return outs

    def measure_chunk_again(self) -> None:
        """Forget the measured chunk size: the next tiles measure it anew (another device, another model)."""
        self.prompt_batch_size, self.chunk_timings, self.chunk_choice, self._chunk_cap = 0, {}, None, None

    @staticmethod
    def _preferred_chunk(timings: Dict[int, float]) -> int:
        """The smallest measured chunk within ``CHUNK_TIE`` of the fastest per prompt: a tie goes to the
        chunk that needs less memory, and one timing's noise does not buy a larger one."""
        fastest = min(timings.values())
        return min(k for k, t in timings.items() if t <= (1 + CHUNK_TIE) * fastest)

    def _decode_all(self, skips: List[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # every prompt's query once per tile (prompts never attend to each other); chunks decode queries
        queries = self.network.prompt_queries(skips, self._text.to(skips[0].device))
        if self.network.config.shared_decoder:
            # its stages run once per tile whatever the prompts, a prompt adds a read-out as large as its
            # logits: chunks would only run the stages again
            return self.network.decode(skips, None, x, queries=queries)
        if self.prompt_batch_size <= 0 and queries.shape[1] > 1:
            return torch.cat(self._calibrate_chunk(skips, queries, x), 1)
        return self._decode_chunks(skips, queries, x)

    def _decode_chunks(self, skips: List[torch.Tensor], queries: torch.Tensor, x: torch.Tensor,
                       chunk: Optional[int] = None) -> torch.Tensor:
        outs, i, bs = [], 0, max(1, chunk or self.prompt_batch_size)
        while i < queries.shape[1]:
            try:
                outs.append(self.network.decode(skips, None, x, queries=queries[:, i:i + bs]))
                i += bs
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = bs // 2
                self.prompt_batch_size = bs
                torch.cuda.empty_cache()
                logger.warning("CUDA out of memory: decoding %d prompts at a time", bs)
        return torch.cat(outs, 1)

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if self._text is None:
            raise RuntimeError("set_prompts() must be called before predicting")
        prediction = self._decode_all(self.network.encode(x, self._directions), x)
        axes = self.allowed_mirroring_axes if self.use_mirroring else None
        if axes:
            combos = [c for k in range(len(axes)) for c in itertools.combinations([a + 2 for a in axes], k + 1)]
            for c in combos:
                flipped = torch.flip(x, c)
                prediction += torch.flip(self._decode_all(self.network.encode(flipped, self._directions), flipped), c)
            prediction /= len(combos) + 1
        if self.tile_progress is not None:
            self._tiles[0] += 1
            self.tile_progress(min(self._tiles[0], self._tiles[1]), self._tiles[1])
        return prediction

    def predict_case_logits(self, data: torch.Tensor, embeddings: np.ndarray,
                            directions: Optional[np.ndarray] = None) -> torch.Tensor:
        """Preprocessed data (C, *spatial) -> logits (N*K, *spatial) on the CPU (``directions``: see
        :meth:`set_prompts`)."""
        self.set_prompts(embeddings, directions)
        self._tiles = [0, 0]
        return self.predict_logits_from_preprocessed_data(data)

    def _internal_get_sliding_window_slicers(self, image_size):
        slicers = super()._internal_get_sliding_window_slicers(image_size)
        self._tiles[1] = len(slicers) * len(self.list_of_parameters)  # every fold runs the same tiles
        return slicers
