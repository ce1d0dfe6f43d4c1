"""The course's machinery, kept apart from the backbones.

The library around this folder (the contract, the models, porting, pretrained weights,
data, training, viz, the neck and the detection head) is what a learner studies and
reuses; what is here only serves the course that teaches it:

* :mod:`~minibones.course.regime`: quick (CPU) or full (GPU), chosen in each notebook's first cell;
* :mod:`~minibones.course.exercises`: the checkers of the exercises at the end of every notebook;
* :mod:`~minibones.course.grading`, :mod:`~minibones.course.own_work` and
  :mod:`~minibones.course.same_computation`: the assignments' autograder;
* :mod:`~minibones.course.classroom`: releasing, grading and checking them with nbgrader.

It imports the library; the library never imports it (``tests/test_layout.py`` checks).
"""
