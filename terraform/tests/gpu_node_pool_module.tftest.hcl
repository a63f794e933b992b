# The gpu-node-pool module on its own: its preconditions guard every caller,
# not only the root module's variable validations.

mock_provider "google" {
  source = "./tests/mocks"
}

variables {
  project_id        = "jobgen-test-project"
  cluster           = "projects/jobgen-test-project/locations/us-central1/clusters/jobgen"
  location          = "us-central1"
  region            = "us-central1"
  name              = "pool"
  machine_type      = "g2-standard-8"
  accelerator_type  = "nvidia-l4"
  accelerator_count = 1
  max_nodes         = 3
  service_account   = "jobgen-nodes@jobgen-test-project.iam.gserviceaccount.com"
}

run "plain_pool" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }

  assert {
    condition     = google_container_node_pool.this.initial_node_count == 0 && google_container_node_pool.this.autoscaling[0].total_min_node_count == 0
    error_message = "a GPU pool starts and idles at zero nodes"
  }
  assert {
    condition     = google_container_node_pool.this.management[0].auto_repair
    error_message = "on-demand pools keep auto-repair"
  }
  assert {
    condition     = google_container_node_pool.this.node_config[0].guest_accelerator[0].gpu_driver_installation_config[0].gpu_driver_version == "LATEST"
    error_message = "GKE installs the driver"
  }
  assert {
    condition     = length(google_container_node_pool.this.queued_provisioning) == 0 && length(google_container_node_pool.this.placement_policy) == 0
    error_message = "no queued provisioning or placement unless asked"
  }
  assert {
    condition     = google_container_node_pool.this.node_locations == toset(["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"])
    error_message = "without zones: every zone that offers the machine type"
  }
}

run "dws_pool" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    queued_provisioning = true
    flex_start          = true
  }

  assert {
    condition     = google_container_node_pool.this.queued_provisioning[0].enabled
    error_message = "queued provisioning is on"
  }
  assert {
    condition     = google_container_node_pool.this.node_config[0].flex_start
    error_message = "flex-start is on"
  }
  assert {
    condition     = !google_container_node_pool.this.management[0].auto_repair
    error_message = "DWS pools turn auto-repair off"
  }
  assert {
    condition     = google_container_node_pool.this.autoscaling[0].location_policy == "ANY"
    error_message = "DWS pools need location policy ANY"
  }
  assert {
    condition     = google_container_node_pool.this.node_config[0].reservation_affinity[0].consume_reservation_type == "NO_RESERVATION"
    error_message = "DWS pools consume no reservation"
  }
}

run "specific_reservation" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    reservation_affinity = "SPECIFIC_RESERVATION"
    reservation_name     = "l4-reservation"
    min_nodes            = 2
  }

  assert {
    condition     = google_container_node_pool.this.node_config[0].reservation_affinity[0].values == toset(["l4-reservation"])
    error_message = "a specific reservation is consumed by name"
  }
  assert {
    condition     = google_container_node_pool.this.initial_node_count == 1
    error_message = "min_nodes 2 over 4 zones starts with 1 node per zone"
  }
}

run "spot_with_reservation_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    spot                 = true
    reservation_affinity = "ANY_RESERVATION"
  }
  expect_failures = [google_container_node_pool.this]
}

run "queued_with_min_nodes_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    queued_provisioning = true
    min_nodes           = 1
  }
  expect_failures = [google_container_node_pool.this]
}

run "queued_with_spot_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    queued_provisioning = true
    spot                = true
  }
  expect_failures = [google_container_node_pool.this]
}

run "compact_in_two_zones_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    placement_policy = "COMPACT"
    zones            = ["us-central1-a", "us-central1-b"]
  }
  expect_failures = [google_container_node_pool.this]
}

run "compact_in_one_zone" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    placement_policy = "COMPACT"
    zones            = ["us-central1-a"]
  }
  assert {
    condition     = google_container_node_pool.this.placement_policy[0].type == "COMPACT" && google_container_node_pool.this.node_locations == toset(["us-central1-a"])
    error_message = "COMPACT placement in its one zone"
  }
}

run "zone_without_the_machine_type_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    zones = ["us-central1-a", "us-central1-f"]
  }
  override_data {
    target = data.google_compute_machine_types.zone["us-central1-f"]
    values = {
      machine_types = []
    }
  }
  expect_failures = [google_container_node_pool.this]
}

run "zones_looked_up_skip_zones_without_it" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  override_data {
    target = data.google_compute_machine_types.zone["us-central1-f"]
    values = {
      machine_types = []
    }
  }
  assert {
    condition     = google_container_node_pool.this.node_locations == toset(["us-central1-a", "us-central1-b", "us-central1-c"])
    error_message = "looked-up zones leave out us-central1-f, which lacks the machine type"
  }
}

run "wrong_builtin_gpu_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    # The mock's g2-standard-8 comes with nvidia-l4: no zone offers it with A100s.
    accelerator_type = "nvidia-tesla-a100"
  }
  expect_failures = [google_container_node_pool.this]
}

run "wrong_builtin_gpu_count_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    accelerator_count = 2
  }
  expect_failures = [google_container_node_pool.this]
}

run "attached_gpu_without_zones_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    machine_type     = "n1-standard-8"
    accelerator_type = "nvidia-tesla-t4"
  }
  override_data {
    target = data.google_compute_machine_types.zone
    values = {
      machine_types = [{ name = "n1-standard-8", guest_cpus = 8, memory_mb = 30720, accelerators = [] }]
    }
  }
  expect_failures = [google_container_node_pool.this]
}

run "attached_gpu_with_zones" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    machine_type     = "n1-standard-8"
    accelerator_type = "nvidia-tesla-t4"
    zones            = ["us-central1-b"]
    spot             = true
  }
  override_data {
    target = data.google_compute_machine_types.zone
    values = {
      machine_types = [{ name = "n1-standard-8", guest_cpus = 8, memory_mb = 30720, accelerators = [] }]
    }
  }
  assert {
    condition     = google_container_node_pool.this.node_config[0].spot && google_container_node_pool.this.node_config[0].guest_accelerator[0].type == "nvidia-tesla-t4"
    error_message = "a spot N1 pool with an attached T4"
  }
}

run "compact_on_unsupported_series_rejected" {
  command = plan
  module {
    source = "./modules/gpu-node-pool"
  }
  variables {
    machine_type     = "n1-standard-8"
    accelerator_type = "nvidia-tesla-t4"
    zones            = ["us-central1-a"]
    placement_policy = "COMPACT"
  }
  expect_failures = [google_container_node_pool.this]
}
