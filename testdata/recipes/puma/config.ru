run ->(env) { [200, { "content-type" => "text/plain" }, ["hello from puma\n"]] }
