"""Tasks: what differs between one class per image, tags and numbers (one module each, a
`tlc.Task` registered through `tlc_tasks` as a plugin's would be): how targets are read and
split, the loss, the metrics, the outputs' finishing, and what evaluate, predict and serve give.
`splits` and `reading` are what the tasks share."""
