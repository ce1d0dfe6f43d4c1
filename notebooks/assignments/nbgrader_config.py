# nbgrader configuration of the minibones assignments (see README.md in this folder).
c = get_config()  # noqa: F821  (provided by nbgrader)

c.CourseDirectory.course_id = "minibones"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
# a student's notebook must not hang the grader: one cell may run for two minutes at most
c.ExecutePreprocessor.timeout = 120
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
