"""The gallery's order: the quickstart (the README's first command) first,
then the examples by file name."""

from sphinx_gallery.sorting import FileNameSortKey


class QuickstartFirst(FileNameSortKey):
    """Sort key putting ``quickstart.py`` before the other examples."""

    def __call__(self, filename):
        return (filename != "quickstart.py", super().__call__(filename))
