"""The reasoning experience model M_exp (paper Eq. 4-5) and everything around it.

`prompts` holds the one prompt/output format of M_exp and its never-raising parser (plus the prompt
of the curriculum task generator, which shares M_exp's weights). Other modules here train and audit
the model. Nothing is imported eagerly: `from dreamgym.experience import prompts` loads only what
it needs.
"""
