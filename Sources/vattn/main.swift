print("vattn")
