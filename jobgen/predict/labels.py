"""Names shared by the prediction modules (no imports: `jobgen status` reads them cheaply)."""

CONTAINER = "predictor"
GROUP = "prediction.jobgen.io"
LABEL_PREDICTION = f"{GROUP}/name"  # on the Job and its pods: the spec name
LABEL_TRIGGER = f"{GROUP}/trigger"  # the watcher trigger that created the Job
ANN_KEY = f"{GROUP}/key"  # the input key the Job name is derived from
ANN_INPUT = f"{GROUP}/input"
ANN_MODEL = f"{GROUP}/model"
ANN_OUTPUT = f"{GROUP}/output"
ANN_OBJECT = f"{GROUP}/object"  # watcher: the object that announced the data version
ANN_GENERATION = f"{GROUP}/generation"
