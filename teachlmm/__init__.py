"""teachlmm: linear mixed models, fitted by readable algorithms."""
from .data import load_radon, read_csv, simulate
from .design import Model
from .errors import BoundaryWarning, ConvergenceWarning, DataError, DesignError, FormulaError, TeachLMMError
from . import mme

__version__ = "0.1.0"
from . import em
from .results import MixedModelResult
