"""The remedies vgbench ships, declared as a user declares one (vgbench.Remedy): the course's,
the literature's and the diagnosis' positive controls."""
