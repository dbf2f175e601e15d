"""Tasks: what differs between one class per image, tags, numbers and masks (one module each).

Empty for now: classification still lives across data, train and use; the task layer moves it here.
"""
