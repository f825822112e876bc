"""napari plugin (``pip install -e ".[napari]"``): segment the selected image by typing what to find.

Registered through napari's plugin manifest (``napari.yaml``, npe2, declared by the ``napari.manifest``
entry point): a reader that opens medical images with SimpleITK in their stored voxel layout
(:mod:`.reader`), and the widget "Segment by text" (:mod:`.widget`). Nothing here is imported unless
napari loads the plugin, so the package works without napari installed.
"""
