"""CLIP: image-text contrastive training with open_clip, the grid applied per modality.

The paper (v1, Table 6) trains CLIP from scratch on COCO Captions under six configurations: which
modality is normalized, and which loss direction is trained (symmetric, image->text, text->image).
Here a configuration is a grid point (``variant``, ``loss_direction``): the image is the query of
the image->text loss and the text the query of the text->image loss, so

==============  =========  ==============
paper config    variant    loss_direction
==============  =========  ==============
norm_sym        cosine     sym
nonorm_sym      dot        sym
imgnorm_i2t     qnorm      i2t
nonorm_i2t      dot        i2t
txtnorm_t2i     qnorm      t2i
nonorm_t2i      dot        t2i
==============  =========  ==============

Other combinations run too (cosine with a one-direction loss is the control the symmetry rule needs
for those tasks). The task symmetry follows the loss: ``sym`` is bidirectional (symmetric), ``i2t``
and ``t2i`` are asymmetric. The grid enters through open_clip's ``ClipLoss.get_logits``
(``adapters.open_clip.GridClipLoss``); training is the adapter's open_clip-style loop.

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``tables`` (the family's own report tables and figures).
"""

from .spec import SPEC

__all__ = ["SPEC"]
