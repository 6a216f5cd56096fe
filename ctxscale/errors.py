"""The one base class of errors caused by what the user asked for (a bad spec, a missing corpus,
an unreadable results file, a cluster too small for a trial). The CLI prints them as one line."""


class UserError(Exception):
    pass
