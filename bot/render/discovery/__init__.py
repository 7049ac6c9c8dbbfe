"""Apps from Argo CD (Application, ApplicationSet) and Flux (Kustomization, HelmRelease).

``discover_apps`` turns the engines' manifests in an exported revision into Sluice
``App`` values whose ``sources`` say how each one renders (see ``render.py``).
Nothing here reaches beyond the export: sources elsewhere are reported, never fetched.
"""
