provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge({ "managed-by" = "terraform", "platform" = "jobgen" }, var.labels)
}
