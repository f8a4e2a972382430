"""The ms-swift seam and the Stage-1 trainer assembly: everything that touches ms-swift's trainer.

- :mod:`.assembly`: ``build_trainer_cls`` puts the mixins of the needed components in front of
  ms-swift's trainer class;
- :mod:`.mixins`: the seed's public mixins, each declaring one component;
- :mod:`.hook`: ``Stage1TrainerHook`` owns ``compute_loss`` and installs the one-pass seam;
- :mod:`.loss_func`: ``Stage1LossFunc``, what ms-swift's ``compute_loss_func`` calls, and the
  refusal of ms-swift options the one pass cannot reproduce;
- :mod:`.output_head`: the head capture of ``materialize_logits: false`` and ms-swift's ``token_acc``
  fed from the pass;
- :mod:`.trainer_sections`: how a trainer class carries its ``custom:`` block, and its tokenizer.

Import from the modules (this package imports nothing, so the components can use the seam without
an import cycle).
"""
