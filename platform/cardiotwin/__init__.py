"""cardiotwin: digital twins of iPSC-derived cardiomyocytes (Kernik-Clancy 2019 model).

Units throughout: time ms, voltage mV, currents pA/pF, concentrations mM, drug nM.
"""

__version__ = "0.1.0"
