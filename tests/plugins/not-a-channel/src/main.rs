fn main() {
    println!("I am not a channel plugin");
}
