# nbgrader configuration of the minibones assignments (see README.md in this folder).
c = get_config()  # noqa: F821  (provided by nbgrader)

c.CourseDirectory.course_id = "minibones"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# the mark schemes sit in the locked question cells, above the student's answer, so that
# the formgrader shows them to the grader (they are removed from the students' versions)
c.ClearMarkScheme.enforce_metadata = False

# --- autograding ---
# one cell may run for two minutes at most; a cell that runs longer is interrupted and
# scores zero, and the notebook goes on
c.Execute.timeout = 120
# a test cell that a student deleted is put back, with its points
c.OverwriteCells.add_missing_cells = True
# nbgrader gives no points to a test cell with anything on stderr; a warning, logging or a
# progress bar is no mistake, so stderr is dropped and only errors fail a test
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?s)."
# instead of nbgrader's first step (ClearOutput): the open tasks' experiments keep the
# student's outputs and are not run again; every other cell is cleared and loses any
# skip-execution tag (a tagged test cell would otherwise never run, and score full marks)
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
    "minibones.course.classroom.ClearOutputExceptExperiments",
]
# late work: 10% of the score per started day, nothing after 7 days (set a due date with
# `nbgrader db assignment add NAME --duedate=...`)
c.AssignLatePenalties.plugin_class = "minibones.course.classroom.LatePenalty"
c.LatePenalty.percent_per_day = 10
c.LatePenalty.zero_after_days = 7

# --- feedback: no hidden tests and no mark schemes ---
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "minibones.course.classroom.FeedbackWithoutHiddenTests",
]
