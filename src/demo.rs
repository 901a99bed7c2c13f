pub async fn run(_once: bool) -> Result<(), String> { Err("todo".into()) }
