"""The project's offline model organism: a small GPT-2 trained on the synthetic tasks.

No model hub is reachable offline, so the pipeline's default model is trained here, from a
seed, on the prompt generators of :mod:`patchsweep.datasets` (IOI, Greater-Than, factual
recall, induction) and shipped as an ordinary Hugging Face directory
(``data/models/ioi-gpt2``) that loads with ``AutoModelForCausalLM.from_pretrained``.

Modules: :mod:`~.tokenizer` (the word-level vocabulary), :mod:`~.train` (the training
loop and its config), :mod:`~.evaluate` (held-out numbers per task) and :mod:`~.card`
(the model card). ``stages/train_organism.py`` ties them together. Nothing is re-exported
here: ``train`` is both a module and its main function, and a re-export would shadow the
module.
"""
